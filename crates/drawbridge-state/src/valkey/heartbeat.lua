-- One heartbeat of one pod, atomically: stamp the record with the server's clock, store it with
-- its TTL, index it (every pod; each model it serves), unindex it from the models it no longer
-- serves, and publish the topology event the change calls for. The event rule mirrors
-- `topology_change` in registry.rs.
--
-- KEYS[1]     pod key
-- KEYS[2]     set of every registered pod id
-- KEYS[3..]   model set of each model the pod serves now
-- ARGV[1]     the record, a JSON object without updated_at_ms
-- ARGV[2]     TTL in milliseconds
-- ARGV[3]     pod id
-- ARGV[4]     topology channel
-- ARGV[5..7]  payloads of the join, drain and update events
-- ARGV[8..9]  prefix and suffix of a model set key (for the models it no longer serves)
-- ARGV[10..]  the models it serves now, in the order of KEYS[3..]
-- Returns the kind of the event published, or '' when none was.

local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local record = string.sub(ARGV[1], 1, -2) .. ',"updated_at_ms":' .. string.format('%.0f', ms) .. '}'

local prev = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], record, 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])

local models = {}
for i = 3, #KEYS do
  redis.call('SADD', KEYS[i], ARGV[3])
  models[#models + 1] = ARGV[i + 7]
end

local old = nil
if prev then
  local ok, decoded = pcall(cjson.decode, prev)
  if ok and type(decoded) == 'table' then
    old = decoded
  end
end

local function same_list(a, b)
  if type(a) ~= 'table' or #a ~= #b then
    return false
  end
  for i = 1, #b do
    if a[i] ~= b[i] then
      return false
    end
  end
  return true
end

local kind = ''
if old == nil then
  kind = 'join'
else
  if type(old.models) == 'table' then
    local serving = {}
    for _, m in ipairs(models) do
      serving[m] = true
    end
    for _, m in ipairs(old.models) do
      if type(m) == 'string' and not serving[m] then
        redis.call('SREM', ARGV[8] .. m .. ARGV[9], ARGV[3])
      end
    end
  end
  local new = cjson.decode(ARGV[1])
  if new.status == 'draining' and old.status ~= 'draining' then
    kind = 'drain'
  elseif old.status ~= new.status or old.address ~= new.address
      or old.http_address ~= new.http_address or not same_list(old.models, models) then
    kind = 'update'
  end
end

if kind == 'join' then
  redis.call('PUBLISH', ARGV[4], ARGV[5])
elseif kind == 'drain' then
  redis.call('PUBLISH', ARGV[4], ARGV[6])
elseif kind == 'update' then
  redis.call('PUBLISH', ARGV[4], ARGV[7])
end
return kind
