-- Take an amount from a balance, never below zero (DECRBY by what is left at most).
--
-- KEYS[1]  balance key (credits:{id})
-- ARGV[1]  the amount in milli-credits (>= 0)
-- Returns {0, 0, 0} for an unmetered account (no balance), else {1, taken, balance after}.

local stored = redis.call('GET', KEYS[1])
if not stored then
  return {0, 0, 0}
end
local balance = tonumber(stored) or 0
local take = math.min(tonumber(ARGV[1]), balance)
if take < 0 then
  take = 0
end
local left = redis.call('DECRBY', KEYS[1], string.format('%.0f', take))
return {1, take, left}
