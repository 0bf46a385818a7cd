-- Every API key, oldest first (by created_at_ms, then id: the sorted set's order).
--
-- KEYS[1]  the sorted set of every key id
-- ARGV[1]  prefix of a key's hash (apikey:)
-- Returns one HGETALL array per key.

local keys = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local fields = redis.call('HGETALL', ARGV[1] .. id)
  if #fields > 0 then
    keys[#keys + 1] = fields
  end
end
return keys
