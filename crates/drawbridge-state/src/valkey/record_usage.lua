-- A request ended: drop its reservation, add it to the key's spent totals and to its ledger
-- row, in one step. A request already charged (its marker is there) is not charged again: a
-- retry after a failure whose outcome was unclear is safe.
--
-- KEYS[1]  the key's spent totals
-- KEYS[2]  the key's reservations
-- KEYS[3]  the ledger of the request's UTC day
-- KEYS[4]  the request's charged marker
-- ARGV[1]  request id
-- ARGV[2]  prompt tokens
-- ARGV[3]  completion tokens
-- ARGV[4]  prompt + completion tokens
-- ARGV[5]  credits
-- ARGV[6]  '1' when the token counts are estimates, '0' otherwise
-- ARGV[7]  the row's identity, JSON ["key_id","account","model"]
-- ARGV[8]  how long the day's ledger is kept after its last write, in seconds
-- ARGV[9]  how long the charged marker is kept, in milliseconds
-- Returns 1, or 0 when the request had been charged already.

if not redis.call('SET', KEYS[4], '1', 'NX', 'PX', ARGV[9]) then
  return 0
end
redis.call('HDEL', KEYS[2], ARGV[1])

redis.call('HINCRBY', KEYS[1], 'tokens', ARGV[4])
redis.call('HINCRBYFLOAT', KEYS[1], 'credits', ARGV[5])
redis.call('HINCRBY', KEYS[1], 'requests', 1)

local row = ':' .. ARGV[7]
redis.call('HINCRBY', KEYS[3], 'requests' .. row, 1)
redis.call('HINCRBY', KEYS[3], 'prompt_tokens' .. row, ARGV[2])
redis.call('HINCRBY', KEYS[3], 'completion_tokens' .. row, ARGV[3])
redis.call('HINCRBYFLOAT', KEYS[3], 'credits' .. row, ARGV[5])
if ARGV[6] == '1' then
  redis.call('HINCRBY', KEYS[3], 'estimated_requests' .. row, 1)
end
redis.call('EXPIRE', KEYS[3], ARGV[8])
return 1
