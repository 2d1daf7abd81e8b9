-- delete: delete jobs in the given states (never RUNNING) with their keys. By id, or by
-- filters, at most `chunk` per call (so that no call blocks Redis for long).
-- ARGV: ttl, states (comma-separated), id?, queue?, name?, chunk.
-- Returns {jobs deleted, 1 if there may be more}.
local states = {}
for s in string.gmatch(ARGV[2], '[^,]+') do states[s] = true end
states['running'] = nil
local job_id, queue, name, chunk = opt(ARGV[3]), opt(ARGV[4]), opt(ARGV[5]), tonumber(ARGV[6])

-- Delete one job if it matches; true if it left the index it was found in.
local function delete(id)
  local key = job_key(id)
  local f = redis.call('HMGET', key, 'state', 'queue', 'name', 'seq', 'unique_key',
    'idempotency_key')
  local state, q, n = f[1], f[2], f[3]
  if not state or not states[state] or (queue and q ~= queue) or (name and n ~= name) then
    return false
  end
  if not FINISHED[state] then unqueue(id, state, q, n, f[4]) end
  notify_finished(id) -- a wait_finished caller looks again, and finds it gone
  forget(key, id, state, q, f[5], f[6])
  return true
end

if job_id then
  if delete(job_id) then return {1, 0} end
  return {0, 0}
end

local deleted = 0
local function walk(key, ready)
  local pos = 0
  while deleted < chunk do
    local entries = redis.call('ZRANGE', key, pos, pos + 99)
    if #entries == 0 then return end
    for _, entry in ipairs(entries) do
      if deleted >= chunk then return end
      local id = entry
      if ready then id = member_id(entry) end
      if id and delete(id) then
        deleted = deleted + 1
      else
        pos = pos + 1
      end
    end
  end
end

for _, q in ipairs(queue and {queue} or redis.call('SMEMBERS', P .. 'queues')) do
  for state in pairs(states) do
    if state == 'ready' then
      for _, n in ipairs(name and {name} or redis.call('SMEMBERS', names_key(q))) do
        walk(ready_key(q, n), true)
      end
    else
      walk(P .. state .. ':' .. q, false)
    end
  end
end
local more = 0
if deleted >= chunk then more = 1 end
return {deleted, more}
