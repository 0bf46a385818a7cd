-- Revoke an API key; a key revoked before keeps its first revocation time.
--
-- KEYS[1]  the key's hash
-- ARGV[1]  revoked_at_ms
-- Returns the key's fields and values after the change, or an empty array when it does not
-- exist.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {}
end
redis.call('HSETNX', KEYS[1], 'revoked_at_ms', ARGV[1])
return redis.call('HGETALL', KEYS[1])
