-- The API key whose secret has this hash, looked up and read in one step.
--
-- KEYS[1]  the index from secret hash to key id
-- ARGV[1]  the hash
-- ARGV[2]  prefix of a key's hash (apikey:)
-- Returns the key's fields and values (HGETALL), or an empty array.

local id = redis.call('HGET', KEYS[1], ARGV[1])
if not id then
  return {}
end
return redis.call('HGETALL', ARGV[2] .. id)
