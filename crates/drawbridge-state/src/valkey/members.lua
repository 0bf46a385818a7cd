-- The live records of the pods in one index set; ids whose record has expired are removed from
-- the set on the way (sets do not expire their members). Atomic, so a pod that heartbeats again
-- meanwhile is never unindexed.
--
-- KEYS[1]  an index set of pod ids
-- ARGV[1]  prefix of a pod key
-- Returns the records, as stored.

local records = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local record = redis.call('GET', ARGV[1] .. id)
  if record then
    records[#records + 1] = record
  else
    redis.call('SREM', KEYS[1], id)
  end
end
return records
