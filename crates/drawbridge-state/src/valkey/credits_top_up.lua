-- Add an amount to a balance (a missing one starts from 0), capped at the largest balance.
--
-- KEYS[1]  balance key (credits:{id})
-- ARGV[1]  the amount in milli-credits (>= 0)
-- ARGV[2]  the largest balance
-- Returns the balance after.

local balance = redis.call('INCRBY', KEYS[1], ARGV[1])
if balance > tonumber(ARGV[2]) then
  redis.call('SET', KEYS[1], ARGV[2])
  return tonumber(ARGV[2])
end
return balance
