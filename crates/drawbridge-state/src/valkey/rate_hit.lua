-- One request of a subject under a sliding-window limit, on ValKey's clock, so every gateway
-- node shares one window. The arithmetic is `drawbridge_core::limits::sliding_window`'s:
-- a request counted at t is in the window while now - t < window; the request passes iff
-- fewer than `limit` are; a refused request is not counted.
--
-- KEYS[1]  the subject's window: a sorted set, one member per counted request, scored by its
--          time in ms
-- ARGV[1]  limit (>= 1)
-- ARGV[2]  window in ms (>= 1)
-- Returns {allowed (1/0), remaining, reset_at_ms, retry_after_ms}.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])

if count < limit then
  -- Unique per request: two requests in one microsecond see different counts.
  redis.call('ZADD', KEYS[1], now, t[1] .. '.' .. t[2] .. '.' .. count)
  redis.call('PEXPIRE', KEYS[1], window)
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {1, limit - count - 1, tonumber(oldest[2]) + window, 0}
end

-- Refused: the request at index count - limit (0-based, oldest first) must leave the window
-- before one passes; normally count == limit and that is the oldest.
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local blocker = redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')
local retry = tonumber(blocker[2]) + window - now
if retry < 1 then
  retry = 1
end
return {0, 0, tonumber(oldest[2]) + window, retry}
