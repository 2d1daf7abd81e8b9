-- history: the attempt history (JSON text, or "" if none) of each job. ARGV: ttl, id...
local out = {}
for i = 2, #ARGV do
  out[#out + 1] = redis.call('HGET', job_key(ARGV[i]), 'attempts') or ''
end
return out
