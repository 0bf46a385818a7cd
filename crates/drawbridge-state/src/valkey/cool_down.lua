-- Rest an account for a while, keeping a longer rest already running.
--
-- KEYS[1]  cooldown key (cooldown:{id})
-- ARGV[1]  the rest in milliseconds
-- Returns 1 when the cooldown was set or extended, 0 when a longer one runs.

local left = redis.call('PTTL', KEYS[1])
if left >= tonumber(ARGV[1]) or left == -1 then
  return 0
end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
return 1
