-- Store a new API key, unless its id or its hash is already stored.
--
-- KEYS[1]  the key's hash (apikey:{id})
-- KEYS[2]  the index from secret hash to key id
-- KEYS[3]  the sorted set of every key id, by creation time
-- ARGV[1]  key id
-- ARGV[2]  SHA-256 of the secret (never the secret)
-- ARGV[3]  created_at_ms
-- ARGV[4..] the record's fields and values, alternating
-- Returns 1 when stored, -1 when the id exists, -2 when the hash belongs to another key.

if redis.call('EXISTS', KEYS[1]) == 1 then
  return -1
end
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then
  return -2
end
local fields = {}
for i = 4, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
return 1
