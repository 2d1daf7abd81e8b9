-- delete: delete jobs in the given states (never RUNNING) with their keys. By id, or by
-- filters, at most `chunk` per call (so that no call blocks Redis for long).
-- ARGV: ttl, states (comma-separated), id?, queue?, name?, chunk.
-- Returns {jobs deleted, 1 if there may be more}.
local states = state_set(ARGV[2])
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

return for_matching(job_id, queue, name, states, chunk, delete)
