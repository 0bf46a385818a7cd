-- Create or update desired accounts, keeping each one's assignment.
--
-- KEYS[1]     set of every account id
-- KEYS[2..]   account key of each account
-- ARGV[1..]   each account as a JSON object without assigned_pod, in the order of KEYS[2..]
--             (ARGV[i] belongs to KEYS[i + 1])
-- Returns the number of accounts written.

for i = 2, #KEYS do
  local record = cjson.decode(ARGV[i - 1])
  local prev = redis.call('GET', KEYS[i])
  if prev then
    local ok, old = pcall(cjson.decode, prev)
    if ok and type(old) == 'table' and type(old.assigned_pod) == 'string' then
      record.assigned_pod = old.assigned_pod
    end
  end
  redis.call('SET', KEYS[i], cjson.encode(record))
  redis.call('SADD', KEYS[1], record.id)
end
return #KEYS - 1
