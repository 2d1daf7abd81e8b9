-- enqueue: write a batch of jobs in one step.
-- ARGV: ttl, max sizes (JSON object queue -> limit), then 10 fields per job: id, name, queue,
-- payload, headers, priority, timeout?, run_at?, unique_key?, idempotency_key?
-- Returns {id, outcome, state} per job, or {"!full", queue, live, limit} having written nothing.
-- A lone job may go straight to a waiting worker (the hand-off below): its state is given as
-- 'ready', as it was made, though it is RUNNING when the call returns.
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

-- A lone READY job, in a queue with nothing else READY, goes straight to a worker waiting on
-- the queue with a standing claim (see common.lua) whose limits do not cover its handler:
-- leased as claim.lua would and pushed to the worker's inbox, which the worker is blocked
-- on, so it starts the job without the round trip of a claim.
local handoff = nil
if #writes == 1 and writes[1][11] == 'ready' then
  local name, queue = writes[1][2], writes[1][3]
  if redis.call('SCARD', idle_key(queue)) > 0
      and redis.call('EXISTS', names_key(queue)) == 0
      and redis.call('SISMEMBER', P .. 'paused', queue) == 0 then
    for _ = 1, 8 do -- ids whose standing claim has ended are dropped on the way
      local worker = redis.call('SPOP', idle_key(queue))
      if not worker then break end
      local w = redis.call('HMGET', waiter_key(worker), 'lease', 'prefix', 'limits')
      if w[1] then
        if cjson.decode(w[3])[name] == nil then
          redis.call('DEL', waiter_key(worker)) -- one job per standing claim
          handoff = {worker = worker, lease = tonumber(w[1]), prefix = w[2]}
        else
          redis.call('SADD', idle_key(queue), worker) -- limited: it claims for itself
        end
        break
      end
    end
  end
end

-- Lease the new job `id` (fields as written) to the handoff's worker and push its
-- CLAIMED_COUNT fields (claim.lua's order) to the worker's inbox.
local function hand_off(key, id, name, queue, payload, headers, priority, timeout, due,
                        unique, idem)
  local worker = handoff.worker
  local token = handoff.prefix .. '.h'
  local expires = num(now + handoff.lease)
  redis.call('HSET', key, 'state', 'running', 'attempt', 1, 'token', token,
    'lease_owner', worker, 'lease_expires_at', expires, 'started_at', now_text)
  redis.call('ZADD', P .. 'running', expires, id)
  redis.call('HINCRBY', P .. 'running_by_name', name, 1)
  redis.call('HINCRBY', P .. 'running_by_queue', queue, 1)
  local fields = {id, name, queue, payload, headers, priority, timeout, '1', due, now_text,
    now_text, worker, expires, token, false, false, false, unique, idem}
  for i = 1, CLAIMED_COUNT do
    fields[i] = fields[i] and ('=' .. fields[i]) or ''
  end
  local inbox = inbox_key(worker)
  redis.call('RPUSH', inbox, unpack(fields))
  redis.call('PEXPIRE', inbox, math.max(1, math.ceil(handoff.lease * 1000)))
end

-- Per-job calls are what a bulk enqueue costs in Redis, so the writes are grouped: one INCRBY
-- reserves the batch's sequence numbers, and the sorted-set adds go out in chunks per key.
local zadds = {} -- key -> flat {score, member, score, member, ...}

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
  zadd_later(zadds, P .. 'jobs', seq, id)
  if handoff then
    hand_off(key, id, name, queue, payload, headers, priority, timeout, due, unique, idem)
  elseif state == 'ready' then
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
    zadd_later(zadds, rkey, ready_score(priority), ready_member(seq, id))
    names_added[queue .. '\0' .. name] = {queue, name}
  else
    zadd_later(zadds, P .. 'scheduled:' .. queue, due, id)
  end
end

zadd_all(zadds)
for _, added in pairs(names_added) do
  redis.call('SADD', names_key(added[1]), added[2])
end

-- A new scheduled job may fall due before an idle waiter's timeout: wake one to look.
for queue in pairs(adding) do
  redis.call('SADD', P .. 'queues', queue)
  if not handoff then wake(queue) end
end
return results
