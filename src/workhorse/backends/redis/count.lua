-- count: how many jobs match the filters (what list.lua could list with them).
-- ARGV: ttl, state?, queue?, name?. Index entries of expired finished jobs are dropped first.
local state, queue, name = opt(ARGV[2]), opt(ARGV[3]), opt(ARGV[4])
sweep_expired(P .. 'finished', true)

-- Count the ids of a zset index whose job matches the queue and name filters.
local function count_matching(key, ready)
  local n = 0
  for _, entry in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    local id = entry
    if ready then id = member_id(entry) end
    local f = id and redis.call('HMGET', job_key(id), 'state', 'queue', 'name')
    if f and f[1] and (not state or f[1] == state) and (not queue or f[2] == queue)
        and (not name or f[3] == name) then
      n = n + 1
    end
  end
  return n
end

if not state then
  if not queue and not name then return redis.call('ZCARD', P .. 'jobs') end
  return count_matching(P .. 'jobs', false)
end
if state == 'running' then
  if queue and name then return count_matching(P .. 'running', false) end
  if queue then return tonumber(redis.call('HGET', P .. 'running_by_queue', queue) or '0') end
  if name then return tonumber(redis.call('HGET', P .. 'running_by_name', name) or '0') end
  return redis.call('ZCARD', P .. 'running')
end
local total = 0
for _, q in ipairs(queue and {queue} or redis.call('SMEMBERS', P .. 'queues')) do
  if state == 'ready' then
    for _, n in ipairs(name and {name} or redis.call('SMEMBERS', names_key(q))) do
      total = total + redis.call('ZCARD', ready_key(q, n))
    end
  else
    local key = P .. state .. ':' .. q
    if FINISHED[state] then sweep_expired(key, false) end
    if name then
      total = total + count_matching(key, false)
    else
      total = total + redis.call('ZCARD', key)
    end
  end
end
return total
