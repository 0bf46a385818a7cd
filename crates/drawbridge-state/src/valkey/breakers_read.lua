-- Read circuit breakers and the server's clock in one step.
--
-- KEYS[1..]  breaker keys (cb:{id})
-- Returns {now in ms, value of KEYS[1] or '', value of KEYS[2] or '', ...} (a stored breaker
-- is a JSON object, never empty).

local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local out = {string.format('%.0f', ms)}
for i = 1, #KEYS do
  out[#out + 1] = redis.call('GET', KEYS[i]) or ''
end
return out
