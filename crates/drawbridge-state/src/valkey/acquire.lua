-- Take a lease if nobody holds it, with a new fencing token.
--
-- KEYS[1]  lease key (holds 'TOKEN:HOLDER', with a TTL)
-- KEYS[2]  epoch key of the lease (the last token handed out; never expires)
-- ARGV[1]  holder
-- ARGV[2]  TTL in milliseconds
-- Returns the new token, or 0 when the lease is held.

if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token .. ':' .. ARGV[1], 'PX', ARGV[2])
return token
