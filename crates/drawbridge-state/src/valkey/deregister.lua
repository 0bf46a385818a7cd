-- Remove one pod, atomically: its record, its index entries, and publish its leave event.
--
-- KEYS[1]     pod key
-- KEYS[2]     set of every registered pod id
-- ARGV[1]     pod id
-- ARGV[2]     topology channel
-- ARGV[3]     payload of the leave event
-- ARGV[4..5]  prefix and suffix of a model set key
-- Returns 1 if a record was removed, 0 if there was none (it had expired, or never existed).

local prev = redis.call('GET', KEYS[1])
if prev then
  local ok, old = pcall(cjson.decode, prev)
  if ok and type(old) == 'table' and type(old.models) == 'table' then
    for _, m in ipairs(old.models) do
      if type(m) == 'string' then
        redis.call('SREM', ARGV[4] .. m .. ARGV[5], ARGV[1])
      end
    end
  end
  redis.call('DEL', KEYS[1])
end
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
if prev then
  return 1
end
return 0
