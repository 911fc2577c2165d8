// Preloaded into the seed's processes by bench/peer.py (`bun --preload`): the seed
// builds its ioredis client from a host and a port only, so this gives that client
// the Redis db number of the benchmark's own (PEER_REDIS_DB) through ioredis's defaults.
const Redis = require(`${process.env.PEER_SEED_DIR}/node_modules/ioredis`);
Redis.defaultOptions.db = Number(process.env.PEER_REDIS_DB ?? "0");
