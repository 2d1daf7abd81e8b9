-- settle: apply the ends of many runs, each an ack, retry, bury or release of a RUNNING job
-- fenced by its token. ARGV: ttl, then 9 fields per settlement: id, token, state, status,
-- result?, run_at, error?, traceback?, keep ("1"/"0"). The state picks the move: succeeded
-- or cancelled (ack), retrying, dead (bury; deleted unless keep) or ready (release). A job
-- whose cancel was asked for ends CANCELLED instead of retrying or ready (cancel_unacked):
-- its worker failed or stopped before it heard of the cancel, which must not be lost.
-- Returns 1 per settlement applied, 0 where the job is not RUNNING under the token.
--
-- Per-job calls are what a busy worker costs Redis, so this is common.lua's leave_running,
-- finish and cancel_unacked written out for a batch: one HMGET reads what a settlement needs,
-- one HDEL and one HSET write the job's hash, and the index moves (running, the running
-- counts, finished and <state>:<queue>) go out once per batch, per key. Each settlement still
-- reads its job after the previous ones wrote theirs, so a job settled twice in one batch is
-- settled once. Nothing in between reads the indexes written at the end.
local now_text = clock()
local done = {}

-- What the end of the batch writes: ids leaving RUNNING, running counts to take back,
-- handlers whose blocked entry to look at, queues to wake, and finish-time adds per key.
local left_running, by_name, by_queue, to_wake = {}, {}, {}, {}
local zadds = {} -- key -> flat {score, member, ...}

-- Checked once: nothing in this script creates either key.
local watched = redis.call('EXISTS', P .. 'watch') == 1
local listening = redis.call('EXISTS', P .. 'results:listening') == 1

-- common.lua's finish, for a job whose hash the caller has already given its final fields
-- (state, status, finished_at, error, result) and whose unique/idempotency keys it read.
local function finished(key, id, queue, state, status, unique_key, idempotency_key)
  release_unique(id, unique_key)
  zadd_later(zadds, P .. 'finished', now_text, id)
  zadd_later(zadds, P .. state .. ':' .. queue, now_text, id)
  if RESULT_TTL > 0 then
    redis.call('PEXPIRE', key, RESULT_TTL)
    if idempotency_key then
      local idem = P .. 'idem:' .. idempotency_key
      if redis.call('GET', idem) == id then
        redis.call('PEXPIRE', idem, RESULT_TTL)
      end
    end
  end
  if watched then notify_finished(id) end
  if listening then publish_result(key, id, queue, state, status, now_text) end
end

-- Adds `field` to a hash write: to `set` with its value, or to `clear` if it has none.
local function put(set, clear, field, value)
  if value then
    set[#set + 1] = field
    set[#set + 1] = value
  else
    clear[#clear + 1] = field
  end
end

-- A settlement's hash write: one HDEL, one HSET.
local function write(key, set, clear)
  redis.call('HDEL', key, unpack(clear))
  redis.call('HSET', key, unpack(set))
end

local LEASE = {'lease_owner', 'lease_expires_at', 'token'}
local READ = {'state', 'token', 'name', 'queue', 'unique_key', 'idempotency_key',
  'cancel_requested'}

for i = 2, #ARGV, 9 do
  local id, token, state, status = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local key = job_key(id)
  local f = redis.call('HMGET', key, unpack(READ))
  if f[1] ~= 'running' or f[2] ~= token then
    done[#done + 1] = 0
  else
    local name, queue, unique_key, idempotency_key = f[3], f[4], f[5] or nil, f[6] or nil
    -- leave_running: the lease fields go with the hash writes below; the indexes at the end.
    left_running[#left_running + 1] = id
    by_name[name] = (by_name[name] or 0) + 1
    by_queue[queue] = (by_queue[queue] or 0) + 1
    local clear = {LEASE[1], LEASE[2], LEASE[3]}
    local cancel_requested = f[7] and (state == 'retrying' or state == 'ready')
    if state == 'succeeded' or state == 'cancelled' or cancel_requested then
      -- ack, or cancel_unacked for a retry or release whose cancel was asked for.
      local result, set = nil, {'state', state, 'status', status, 'finished_at', now_text}
      if cancel_requested then
        state, status = 'cancelled', '499'
        set[2], set[4] = state, status
      else
        result = opt(ARGV[i + 4])
      end
      put(set, clear, 'result', result)
      if state == 'cancelled' then
        put(set, clear, 'error', 'cancelled')
      else
        put(set, clear, 'error', nil)
        put(set, clear, 'traceback', nil)
      end
      write(key, set, clear)
      finished(key, id, queue, state, status, unique_key, idempotency_key)
    elseif state == 'retrying' then
      local run_at, err, traceback = ARGV[i + 5], opt(ARGV[i + 6]), opt(ARGV[i + 7])
      local set = {'state', 'retrying', 'status', status, 'run_at', run_at,
        'finished_at', now_text}
      put(set, clear, 'error', err)
      put(set, clear, 'traceback', traceback)
      write(key, set, clear)
      record_attempt(key, status, err, traceback, now_text)
      zadd_later(zadds, P .. 'retrying:' .. queue, run_at, id)
      to_wake[queue] = true -- an idle waiter learns the new due time
    elseif state == 'dead' then
      local err, traceback = opt(ARGV[i + 6]), opt(ARGV[i + 7])
      if ARGV[i + 8] == '1' then
        local set = {'state', 'dead', 'status', status, 'finished_at', now_text}
        put(set, clear, 'error', err)
        put(set, clear, 'traceback', traceback)
        write(key, set, clear)
        record_attempt(key, status, err, traceback, now_text)
        finished(key, id, queue, 'dead', status, unique_key, idempotency_key)
      else
        if watched then notify_finished(id) end
        forget(key, id, 'running', queue, unique_key, idempotency_key)
      end
    else
      -- release: back to READY in its old place in line, the attempt not counted.
      redis.call('HDEL', key, unpack(clear))
      redis.call('HINCRBY', key, 'attempt', -1)
      redis.call('HSET', key, 'state', 'ready')
      local g = redis.call('HMGET', key, 'priority', 'seq')
      ready_add(queue, name, g[1], g[2], id)
      to_wake[queue] = true
    end
    done[#done + 1] = 1
  end
end

if #left_running > 0 then
  call_chunked('ZREM', P .. 'running', left_running)
  for name, count in pairs(by_name) do
    if redis.call('HINCRBY', P .. 'running_by_name', name, -count) <= 0 then
      redis.call('HDEL', P .. 'running_by_name', name)
    end
  end
  for queue, count in pairs(by_queue) do
    if redis.call('HINCRBY', P .. 'running_by_queue', queue, -count) <= 0 then
      redis.call('HDEL', P .. 'running_by_queue', queue)
    end
  end
  -- A claim left jobs of this handler READY because it was at its max concurrency: a slot
  -- is free now, so an idle worker should look again.
  for name in pairs(by_name) do
    local blocked = redis.call('HGET', P .. 'blocked', name)
    if blocked then
      redis.call('HDEL', P .. 'blocked', name)
      to_wake[blocked] = true
    end
  end
  zadd_all(zadds)
  for queue in pairs(to_wake) do
    wake(queue)
  end
end
return done
