-- unregister: forget a worker. ARGV: ttl, worker id.
redis.call('HDEL', P .. 'workers', ARGV[2])
redis.call('ZREM', P .. 'beats', ARGV[2])
return 1
