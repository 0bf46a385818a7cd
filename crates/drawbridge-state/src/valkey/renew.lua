-- Extend a lease if it is still held by the caller with the caller's token.
--
-- KEYS[1]  lease key
-- ARGV[1]  the lease as held, 'TOKEN:HOLDER'
-- ARGV[2]  TTL in milliseconds
-- Returns 1 if renewed, 0 if the lease was lost.

if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
