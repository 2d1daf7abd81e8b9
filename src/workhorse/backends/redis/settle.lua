-- settle: apply the ends of many runs, each an ack, retry, bury or release of a RUNNING job
-- fenced by its token. ARGV: ttl, then 9 fields per settlement: id, token, state, status,
-- result?, run_at, error?, traceback?, keep ("1"/"0"). The state picks the move: succeeded
-- or cancelled (ack), retrying, dead (bury; deleted unless keep) or ready (release). A job
-- whose cancel was asked for ends CANCELLED instead of retrying or ready (cancel_unacked):
-- its worker failed or stopped before it heard of the cancel, which must not be lost.
-- Returns 1 per settlement applied, 0 where the job is not RUNNING under the token.
local now_text = clock()
local done = {}

local function ack(key, id, queue, state, status, result)
  set_or_clear(key, 'result', result)
  if state == 'cancelled' then
    redis.call('HSET', key, 'error', 'cancelled')
  else
    redis.call('HDEL', key, 'error', 'traceback')
  end
  finish(key, id, queue, state, status, now_text)
end

local function retry(key, id, queue, run_at, status, err, traceback)
  if redis.call('HEXISTS', key, 'cancel_requested') == 1 then
    cancel_unacked(key, id, queue, now_text)
    return
  end
  redis.call('HSET', key, 'state', 'retrying', 'status', status, 'run_at', run_at,
    'finished_at', now_text)
  set_or_clear(key, 'error', err)
  set_or_clear(key, 'traceback', traceback)
  record_attempt(key, status, err, traceback, now_text)
  redis.call('ZADD', P .. 'retrying:' .. queue, run_at, id)
  wake(queue) -- an idle waiter learns the new due time
end

local function bury(key, id, queue, status, err, traceback, keep)
  if keep then
    set_or_clear(key, 'error', err)
    set_or_clear(key, 'traceback', traceback)
    record_attempt(key, status, err, traceback, now_text)
    finish(key, id, queue, 'dead', status, now_text)
  else
    local f = redis.call('HMGET', key, 'unique_key', 'idempotency_key')
    notify_finished(id)
    forget(key, id, 'running', queue, f[1], f[2])
  end
end

local function release(key, id, name, queue)
  if redis.call('HEXISTS', key, 'cancel_requested') == 1 then
    cancel_unacked(key, id, queue, now_text)
    return
  end
  redis.call('HINCRBY', key, 'attempt', -1)
  redis.call('HSET', key, 'state', 'ready')
  local f = redis.call('HMGET', key, 'priority', 'seq')
  ready_add(queue, name, f[1], f[2], id) -- its old place in line
  wake(queue)
end

for i = 2, #ARGV, 9 do
  local id, token, state, status = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local key, name, queue = held(id, token)
  if not key then
    done[#done + 1] = 0
  else
    leave_running(key, id, name, queue)
    if state == 'succeeded' or state == 'cancelled' then
      ack(key, id, queue, state, status, opt(ARGV[i + 4]))
    elseif state == 'retrying' then
      retry(key, id, queue, ARGV[i + 5], status, opt(ARGV[i + 6]), opt(ARGV[i + 7]))
    elseif state == 'dead' then
      bury(key, id, queue, status, opt(ARGV[i + 6]), opt(ARGV[i + 7]), ARGV[i + 8] == '1')
    else
      release(key, id, name, queue)
    end
    done[#done + 1] = 1
  end
end
return done
