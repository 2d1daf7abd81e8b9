-- prune: delete finished jobs that ended before `before` and those beyond the `keep` most
-- recent, at most `chunk` of each rule per call. ARGV: ttl, before?, keep?, chunk.
-- Returns {jobs deleted, 1 if there may be more}.
local before, keep, chunk = opt(ARGV[2]), opt(ARGV[3]), tonumber(ARGV[4])
sweep_expired(P .. 'finished', true)
local doomed, seen, more = {}, {}, 0
local function add(ids)
  if #ids >= chunk then more = 1 end
  for _, id in ipairs(ids) do
    if not seen[id] then
      seen[id] = true
      doomed[#doomed + 1] = id
    end
  end
end
if before then
  add(redis.call('ZRANGEBYSCORE', P .. 'finished', '-inf', '(' .. before, 'LIMIT', 0, chunk))
end
if keep then
  -- newest first, ties by id as well: the rank of "the keep most recent"
  local k = tonumber(keep)
  add(redis.call('ZREVRANGE', P .. 'finished', k, k + chunk - 1))
end
local deleted = 0
for _, id in ipairs(doomed) do
  local key = job_key(id)
  local f = redis.call('HMGET', key, 'state', 'queue', 'unique_key', 'idempotency_key')
  if FINISHED[f[1]] then
    forget(key, id, f[1], f[2], f[3], f[4])
    deleted = deleted + 1
  else
    -- expired meanwhile, or not finished (a stale entry): only the index entry goes
    redis.call('ZREM', P .. 'finished', id)
    if not f[1] then redis.call('ZREM', P .. 'jobs', id) end
  end
end
return {deleted, more}
