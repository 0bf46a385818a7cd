-- Assign an account to a pod (or unassign it), fenced by the controller's lease: the write
-- happens only while the caller still holds the lease with its token.
--
-- KEYS[1]  lease key
-- KEYS[2]  account key
-- ARGV[1]  the caller's lease, 'TOKEN:HOLDER'
-- ARGV[2]  pod id, or '' to unassign
-- Returns 1 when written, -1 when fenced off (the lease is another's, or gone), 0 when the
-- account does not exist.

if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
local prev = redis.call('GET', KEYS[2])
if not prev then
  return 0
end
local record = cjson.decode(prev)
if ARGV[2] == '' then
  record.assigned_pod = nil
else
  record.assigned_pod = ARGV[2]
end
redis.call('SET', KEYS[2], cjson.encode(record))
return 1
