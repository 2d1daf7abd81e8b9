-- checkin: store a progress message on a RUNNING job.
-- ARGV: ttl, id, token, message. Returns 1, or 0 if stale.
local key = held(ARGV[2], ARGV[3])
if not key then return 0 end
local now_text = clock()
redis.call('HSET', key, 'checkin', ARGV[4], 'checkin_at', now_text)
return 1
