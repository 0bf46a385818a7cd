-- A request ended: drop its reservation, add it to the key's spent totals and to its ledger
-- row, in one step. A request already charged (its id is in the charged set) is not charged
-- again: a retry after a failure whose outcome was unclear is safe.
--
-- The charged set is one sorted set for every request: member the request id, score ValKey's
-- TIME in ms when it was charged. It keeps the ids charged in the last window (ARGV[9]) and at
-- most ARGV[10] of them, the oldest forgotten first, so its size and the number of keys stay
-- bounded however many requests are served. The embedded store applies the same two bounds.
--
-- KEYS[1]  the key's spent totals
-- KEYS[2]  the key's reservations
-- KEYS[3]  the ledger of the request's UTC day
-- KEYS[4]  the charged set
-- ARGV[1]  request id
-- ARGV[2]  prompt tokens
-- ARGV[3]  completion tokens
-- ARGV[4]  prompt + completion tokens
-- ARGV[5]  credits
-- ARGV[6]  '1' when the token counts are estimates, '0' otherwise
-- ARGV[7]  the row's identity, JSON ["key_id","account","model"]
-- ARGV[8]  how long the day's ledger is kept after its last write, in seconds
-- ARGV[9]  how long a charged id is remembered, in milliseconds (>= 1)
-- ARGV[10] the most charged ids remembered (>= 1)
-- Returns 1, or 0 when the request had been charged already.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[9])
local most = tonumber(ARGV[10])

-- Ids charged window ms ago or earlier are forgotten (kept while now - at < window).
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - window)
if redis.call('ZSCORE', KEYS[4], ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[4], now, ARGV[1])
local remembered = redis.call('ZCARD', KEYS[4])
if remembered > most then
  redis.call('ZREMRANGEBYRANK', KEYS[4], 0, remembered - most - 1)
end
redis.call('PEXPIRE', KEYS[4], window)

redis.call('HDEL', KEYS[2], ARGV[1])

redis.call('HINCRBY', KEYS[1], 'tokens', ARGV[4])
redis.call('HINCRBYFLOAT', KEYS[1], 'credits', ARGV[5])
redis.call('HINCRBY', KEYS[1], 'requests', 1)

local row = ':' .. ARGV[7]
redis.call('HINCRBY', KEYS[3], 'requests' .. row, 1)
redis.call('HINCRBY', KEYS[3], 'prompt_tokens' .. row, ARGV[2])
redis.call('HINCRBY', KEYS[3], 'completion_tokens' .. row, ARGV[3])
redis.call('HINCRBYFLOAT', KEYS[3], 'credits' .. row, ARGV[5])
if ARGV[6] == '1' then
  redis.call('HINCRBY', KEYS[3], 'estimated_requests' .. row, 1)
end
redis.call('EXPIRE', KEYS[3], ARGV[8])
return 1
