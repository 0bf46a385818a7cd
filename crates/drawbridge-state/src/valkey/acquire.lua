-- Take a lease if nobody holds it, with a new fencing token.
--
-- KEYS[1]  lease key (holds 'TOKEN:HOLDER', with a TTL)
-- KEYS[2]  epoch key of the lease (the last token handed out; never expires)
-- ARGV[1]  holder
-- ARGV[2]  TTL in milliseconds
-- Returns the new token, or 0 when the lease is held.
--
-- The token is the larger of the last one + 1 and the server's clock in microseconds: it grows
-- with every acquisition, and also after the store lost its data (the epoch key with it), since
-- every earlier token was handed out at an earlier time.

if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local now = redis.call('TIME')
-- Below 2^53: exact in Lua's numbers until the year 2255.
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
local last = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
local token = last + 1
if now_us > token then
  token = now_us
end
local text = string.format('%d', token)
redis.call('SET', KEYS[2], text)
redis.call('SET', KEYS[1], text .. ':' .. ARGV[1], 'PX', ARGV[2])
return token
