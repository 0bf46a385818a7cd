-- How long each account still rests.
--
-- KEYS[1..]  cooldown keys (cooldown:{id})
-- Returns the milliseconds left for each key, in order (0: not resting).

local out = {}
for i = 1, #KEYS do
  local left = redis.call('PTTL', KEYS[i])
  if left < 0 then
    left = 0
  end
  out[#out + 1] = left
end
return out
