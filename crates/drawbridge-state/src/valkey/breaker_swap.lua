-- Compare-and-set of one circuit breaker: write the new value only if the stored one is still
-- exactly what the writer computed from.
--
-- KEYS[1]  breaker key (cb:{id})
-- ARGV[1]  '1' when the writer read a value, '0' when it read none
-- ARGV[2]  the value it read (ignored when ARGV[1] is '0')
-- ARGV[3]  the new value
-- Returns {'1', now in ms, ''} when written, {'0', now in ms, current value or ''} when the
-- stored value had changed.

local now = redis.call('TIME')
local ms = string.format('%.0f', tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
local current = redis.call('GET', KEYS[1])
local same
if ARGV[1] == '0' then
  same = not current
else
  same = current == ARGV[2]
end
if not same then
  return {'0', ms, current or ''}
end
redis.call('SET', KEYS[1], ARGV[3])
return {'1', ms, ''}
