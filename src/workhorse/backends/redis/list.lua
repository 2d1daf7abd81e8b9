-- list: jobs matching the filters, in enqueue order, as {job fields}...
-- ARGV: ttl, state?, queue?, name?, limit, offset.
local state, queue, name = opt(ARGV[2]), opt(ARGV[3]), opt(ARGV[4])
local limit, offset = tonumber(ARGV[5]), tonumber(ARGV[6])
local out = {}
if limit <= 0 then return out end

local function matches(f)
  return f[1] and (not state or f[1] == state) and (not queue or f[2] == queue)
    and (not name or f[3] == name)
end

if not state then
  -- Walk every job in enqueue order; ids of expired jobs are stepped over.
  local skipped, pos = 0, 0
  while #out < limit do
    local ids = redis.call('ZRANGE', P .. 'jobs', pos, pos + 199)
    if #ids == 0 then break end
    pos = pos + #ids
    for _, id in ipairs(ids) do
      local key = job_key(id)
      if matches(redis.call('HMGET', key, 'state', 'queue', 'name')) then
        if skipped < offset then
          skipped = skipped + 1
        else
          out[#out + 1] = redis.call('HGETALL', key)
          if #out >= limit then break end
        end
      end
    end
  end
  return out
end

-- A state: gather the ids from that state's indexes, then order them by enqueue sequence.
local ids = {}
local queues = queue and {queue} or redis.call('SMEMBERS', P .. 'queues')
if state == 'running' then
  ids = redis.call('ZRANGE', P .. 'running', 0, -1)
elseif state == 'ready' then
  for _, q in ipairs(queues) do
    for _, n in ipairs(name and {name} or redis.call('SMEMBERS', names_key(q))) do
      for _, member in ipairs(redis.call('ZRANGE', ready_key(q, n), 0, -1)) do
        local id = member_id(member)
        if id then ids[#ids + 1] = id end
      end
    end
  end
else
  for _, q in ipairs(queues) do
    for _, id in ipairs(redis.call('ZRANGE', P .. state .. ':' .. q, 0, -1)) do
      ids[#ids + 1] = id
    end
  end
end
local rows, seen = {}, {}
for _, id in ipairs(ids) do
  if not seen[id] then
    seen[id] = true
    local f = redis.call('HMGET', job_key(id), 'state', 'queue', 'name', 'seq')
    if matches(f) then rows[#rows + 1] = {tonumber(f[4]) or 0, id} end
  end
end
table.sort(rows, function(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] end
  return a[2] < b[2]
end)
for i = offset + 1, math.min(#rows, offset + limit) do
  out[#out + 1] = redis.call('HGETALL', job_key(rows[i][2]))
end
return out
