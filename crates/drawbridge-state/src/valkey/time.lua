-- ValKey's clock, the one every node shares: {seconds, microseconds}.
return redis.call('TIME')
