-- Record a use of an API key: last_used_at_ms only moves forward, and a key that does not
-- exist is not created.
--
-- KEYS[1]  the key's hash
-- ARGV[1]  the time of the use, ms since the epoch
-- Returns 1 when written, 0 otherwise.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local previous = tonumber(redis.call('HGET', KEYS[1], 'last_used_at_ms') or '0')
if tonumber(ARGV[1]) <= previous then
  return 0
end
redis.call('HSET', KEYS[1], 'last_used_at_ms', ARGV[1])
return 1
