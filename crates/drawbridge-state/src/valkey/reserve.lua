-- Admit one request of a key against its quota and reserve its amount, on ValKey's clock. The
-- rule is `drawbridge_core::limits::quota_admits`:
--   spent < limit and (in_flight == 0 or spent + reserved + amount <= limit)
-- with spent, reserved and in_flight the key's before this request (expired reservations, and
-- an earlier reservation of the same request, do not count).
--
-- KEYS[1]  the key's spent totals (hash: tokens, credits, requests)
-- KEYS[2]  the key's reservations (hash: request id -> 'EXPIRES_MS:AMOUNT')
-- ARGV[1]  request id
-- ARGV[2]  the spent field of the quota's unit ('tokens' or 'credits')
-- ARGV[3]  limit
-- ARGV[4]  amount
-- ARGV[5]  reservation TTL in ms
-- Returns {allowed (1/0), spent, reserved, in_flight}; spent and reserved as strings (a Lua
-- number would be truncated to an integer on the way out).

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[3])
local amount = tonumber(ARGV[4])
local ttl = tonumber(ARGV[5])

local spent = tonumber(redis.call('HGET', KEYS[1], ARGV[2]) or '0')
local reserved = 0
local in_flight = 0
local entries = redis.call('HGETALL', KEYS[2])
for i = 1, #entries, 2 do
  local request, value = entries[i], entries[i + 1]
  local sep = string.find(value, ':', 1, true)
  local expires = tonumber(string.sub(value, 1, sep - 1))
  if expires <= now then
    redis.call('HDEL', KEYS[2], request)
  elseif request ~= ARGV[1] then
    reserved = reserved + tonumber(string.sub(value, sep + 1))
    in_flight = in_flight + 1
  end
end

local allowed = spent < limit and (in_flight == 0 or spent + reserved + amount <= limit)
if allowed then
  redis.call('HSET', KEYS[2], ARGV[1], string.format('%.0f', now + ttl) .. ':' .. ARGV[4])
  -- The hash outlives its longest reservation, and no more.
  if redis.call('PTTL', KEYS[2]) < ttl then
    redis.call('PEXPIRE', KEYS[2], ttl)
  end
else
  redis.call('HDEL', KEYS[2], ARGV[1])
end
return {allowed and 1 or 0, string.format('%.17g', spent), string.format('%.17g', reserved), in_flight}
