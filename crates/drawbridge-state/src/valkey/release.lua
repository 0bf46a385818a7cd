-- Give up a lease if it is still held by the caller with the caller's token.
--
-- KEYS[1]  lease key
-- ARGV[1]  the lease as held, 'TOKEN:HOLDER'
-- Returns 1 if released, 0 if it was not held so.

if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
