-- cancel_all: cancel the live jobs matching a queue and/or a handler name, at most `chunk`
-- queued ones per call (so that no call blocks Redis for long).
-- ARGV: ttl, queue?, name?, flag running jobs too ("1"/"0"), chunk.
-- Returns {running jobs flagged, queued jobs cancelled, 1 if there may be more}.
local queue, name = opt(ARGV[2]), opt(ARGV[3])
local flag_running, chunk = ARGV[4] == '1', tonumber(ARGV[5])
local now_text = clock()
local flagged, cancelled = 0, 0

if flag_running then
  for _, id in ipairs(redis.call('ZRANGE', P .. 'running', 0, -1)) do
    local key = job_key(id)
    local f = redis.call('HMGET', key, 'state', 'queue', 'name')
    if f[1] == 'running' and (not queue or f[2] == queue) and (not name or f[3] == name) then
      redis.call('HSET', key, 'cancel_requested', '1')
      flagged = flagged + 1
    end
  end
end

local function cancel_one(id, state, q, n, seq)
  unqueue(id, state, q, n, seq)
  local key = job_key(id)
  redis.call('HSET', key, 'error', 'cancelled')
  finish(key, id, q, 'cancelled', 499, now_text)
  cancelled = cancelled + 1
end

-- Walk an index of `state` jobs of queue q; what is not cancelled stays and is stepped over.
local function walk(key, q, state, ready)
  local pos = 0
  while cancelled < chunk do
    local entries = redis.call('ZRANGE', key, pos, pos + 99)
    if #entries == 0 then return end
    for _, entry in ipairs(entries) do
      if cancelled >= chunk then return end
      local id = entry
      if ready then id = member_id(entry) end
      local f = id and redis.call('HMGET', job_key(id), 'state', 'queue', 'name', 'seq')
      if f and f[1] == state and f[2] == q and (not name or f[3] == name) then
        cancel_one(id, state, q, f[3], f[4])
      else
        pos = pos + 1
      end
    end
  end
end

local queues = queue and {queue} or redis.call('SMEMBERS', P .. 'queues')
for _, q in ipairs(queues) do
  local names = name and {name} or redis.call('SMEMBERS', names_key(q))
  for _, n in ipairs(names) do
    walk(ready_key(q, n), q, 'ready', true)
  end
  walk(P .. 'scheduled:' .. q, q, 'scheduled', false)
  walk(P .. 'retrying:' .. q, q, 'retrying', false)
end
local more = 0
if cancelled >= chunk then more = 1 end
return {flagged, cancelled, more}
