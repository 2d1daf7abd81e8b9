-- watch: register interest in a job's finish (finish() then publishes its id), unless it has
-- finished already. ARGV: ttl, id.
-- Returns nil if there is no such job, its fields if finished, else 0 (watched).
local id = ARGV[2]
local key = job_key(id)
local state = redis.call('HGET', key, 'state')
if not state then return false end
if FINISHED[state] then return redis.call('HGETALL', key) end
redis.call('HINCRBY', P .. 'watch', id, 1)
return 0
