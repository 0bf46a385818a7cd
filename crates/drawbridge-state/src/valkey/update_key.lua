-- Replace an API key's limits and expiry.
--
-- KEYS[1]  the key's hash
-- ARGV[1]  limits, JSON
-- ARGV[2]  expires_at_ms, or '' for none
-- Returns the key's fields and values after the change, or an empty array when it does not
-- exist.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {}
end
redis.call('HSET', KEYS[1], 'limits', ARGV[1])
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], 'expires_at_ms')
else
  redis.call('HSET', KEYS[1], 'expires_at_ms', ARGV[2])
end
return redis.call('HGETALL', KEYS[1])
