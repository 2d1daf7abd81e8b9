-- enqueue: write a batch of jobs in one step.
-- ARGV: ttl, max sizes (JSON object queue -> limit), then 10 fields per job: id, name, queue,
-- payload, headers, priority, timeout?, run_at?, unique_key?, idempotency_key?
-- Returns {id, outcome, state} per job, or {"!full", queue, live, limit} having written nothing.
local now_text, now = clock()
local sizes = ARGV[2] == '{}' and {} or cjson.decode(ARGV[2]) -- most calls have no limits
local LIVE = {scheduled = true, ready = true, running = true, retrying = true}

local results, writes, adding = {}, {}, {}
local pending = {} -- id -> state, for the jobs this batch writes
local batch_unique, batch_idem = {}, {}

local function state_of(id)
  return pending[id] or redis.call('HGET', job_key(id), 'state')
end

for i = 3, #ARGV, 10 do
  local id, name, queue, payload, headers, priority = ARGV[i], ARGV[i + 1], ARGV[i + 2],
    ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local timeout, run_at = opt(ARGV[i + 6]), opt(ARGV[i + 7])
  local unique, idem = opt(ARGV[i + 8]), opt(ARGV[i + 9])
  local existing = state_of(id)
  local first = idem and (batch_idem[idem] or redis.call('GET', P .. 'idem:' .. idem))
  local first_state = first and state_of(first)
  local holder = unique and (batch_unique[unique] or redis.call('GET', P .. 'unique:' .. unique))
  local holder_state = holder and state_of(holder)
  if existing then
    -- The same id again: this call resent after its reply was lost, so it is not new.
    results[#results + 1] = {id, 'created', existing}
  elseif first_state then
    results[#results + 1] = {first, 'existing', first_state}
  elseif holder_state and LIVE[holder_state] then
    results[#results + 1] = {holder, 'duplicate', holder_state}
  else
    local due = run_at or now_text
    local state = 'ready'
    if tonumber(due) > now then state = 'scheduled' end
    pending[id] = state
    -- false, not nil: a nil would end the table early for unpack
    writes[#writes + 1] = {id, name, queue, payload, headers, priority, timeout or false, due,
      unique or false, idem or false, state}
    adding[queue] = (adding[queue] or 0) + 1
    if unique then batch_unique[unique] = id end
    if idem then batch_idem[idem] = id end
    results[#results + 1] = {id, 'created', state}
  end
end

for queue, count in pairs(adding) do
  local most = sizes[queue]
  if most then
    local live = live_count(queue)
    if live + count > most then
      return {'!full', queue, live, most}
    end
  end
end

-- Per-job calls are what a bulk enqueue costs in Redis, so the writes are grouped: one INCRBY
-- reserves the batch's sequence numbers, and the sorted-set adds go out in chunks per key.
local zadds = {} -- key -> flat {score, member, score, member, ...}
local function zadd_later(key, score, member)
  local args = zadds[key]
  if not args then
    args = {}
    zadds[key] = args
  end
  args[#args + 1] = score
  args[#args + 1] = member
end

local ready_keys, names_added = {}, {}
local seq = #writes > 0 and redis.call('INCRBY', P .. 'seq', #writes) - #writes or 0
for _, w in ipairs(writes) do
  local id, name, queue, payload, headers, priority, timeout, due, unique, idem, state =
    unpack(w, 1, 11)
  seq = seq + 1
  local key = job_key(id)
  redis.call('HSET', key, 'id', id, 'name', name, 'queue', queue, 'payload', payload,
    'headers', headers, 'priority', priority, 'state', state, 'attempt', 0, 'run_at', due,
    'enqueued_at', now_text, 'seq', seq)
  if timeout then redis.call('HSET', key, 'timeout', timeout) end
  if unique then
    redis.call('HSET', key, 'unique_key', unique)
    redis.call('SET', P .. 'unique:' .. unique, id)
  end
  if idem then
    redis.call('HSET', key, 'idempotency_key', idem)
    redis.call('SET', P .. 'idem:' .. idem, id)
  end
  zadd_later(P .. 'jobs', seq, id)
  if state == 'ready' then
    local names = ready_keys[queue]
    if not names then
      names = {}
      ready_keys[queue] = names
    end
    local rkey = names[name]
    if not rkey then
      rkey = ready_key(queue, name)
      names[name] = rkey
    end
    zadd_later(rkey, ready_score(priority), ready_member(seq, id))
    names_added[queue .. '\0' .. name] = {queue, name}
  else
    zadd_later(P .. 'scheduled:' .. queue, due, id)
  end
end

local CHUNK = 2000 -- arguments per ZADD: well below Lua's limit on unpack
for key, args in pairs(zadds) do
  for first = 1, #args, CHUNK do
    redis.call('ZADD', key, unpack(args, first, math.min(first + CHUNK - 1, #args)))
  end
end
for _, added in pairs(names_added) do
  redis.call('SADD', names_key(added[1]), added[2])
end

-- A new scheduled job may fall due before an idle waiter's timeout: wake one to look.
for queue in pairs(adding) do
  redis.call('SADD', P .. 'queues', queue)
  wake(queue)
end
return results
