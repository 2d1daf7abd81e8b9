-- scan: jobs in enqueue order from sequence number `after` on, at most `limit`.
-- ARGV: ttl, after, limit. Returns {next sequence or "", {job fields}...}; the ids of expired
-- jobs are stepped over.
local after, limit = ARGV[2], tonumber(ARGV[3])
local entries = redis.call('ZRANGEBYSCORE', P .. 'jobs', after, '+inf', 'WITHSCORES', 'LIMIT', 0,
  limit)
local rows = {}
for i = 1, #entries, 2 do
  local row = redis.call('HGETALL', job_key(entries[i]))
  if #row > 0 then rows[#rows + 1] = row end
end
local next_seq = ''
if #entries / 2 >= limit and limit > 0 then
  next_seq = tostring(tonumber(entries[#entries]) + 1)
end
return {next_seq, rows}
