-- Apply configured credit grants: an account's balance is set to its grant when the grant
-- differs from the last one applied, or when it is metered by config but has no balance.
--
-- KEYS[2i-1]  balance key of account i (credits:{id})
-- KEYS[2i]    last-grant key of account i (credits:{id}:grant)
-- ARGV[i]     the grant of account i in milli-credits, or '' for an unmetered account
-- Returns the indexes (1-based) of the accounts whose balance was set.

local applied = {}
for i = 1, #ARGV do
  local balance_key = KEYS[2 * i - 1]
  local grant_key = KEYS[2 * i]
  local grant = ARGV[i]
  local previous = redis.call('GET', grant_key)
  local changed = (previous or '') ~= grant
  local missing = grant ~= '' and redis.call('EXISTS', balance_key) == 0
  if changed or missing then
    if grant == '' then
      redis.call('DEL', balance_key, grant_key)
    else
      redis.call('SET', balance_key, grant)
      redis.call('SET', grant_key, grant)
    end
    applied[#applied + 1] = i
  end
end
return applied
