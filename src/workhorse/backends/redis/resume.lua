-- resume: let claim take jobs of a queue again. ARGV: ttl, queue.
redis.call('SREM', P .. 'paused', ARGV[2])
wake(ARGV[2])
return 1
