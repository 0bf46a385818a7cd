-- The ledgers of some days, read in one step.
--
-- KEYS[1..]  the ledgers (usage:{day}), in day order
-- Returns one HGETALL array per key, in the same order (empty for a day without usage).

local days = {}
for i = 1, #KEYS do
  days[i] = redis.call('HGETALL', KEYS[i])
end
return days
