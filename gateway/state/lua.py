"""The Lua scripts of :mod:`gateway.state.redis`: each step is one script, so it is atomic across
replicas and one round trip. Times are the server's (``TIME``), in integer microseconds, so that
replicas with skewed clocks agree and every number stays exact in Lua's doubles (scores go to
Redis as ``%.17g``); what a script returns is relative (microseconds from now), because Lua numbers
come back as integers and ``tostring`` keeps only 14 digits.

One key's keys (hash-tagged by its name, so one Cluster slot holds them)::

    req     ZSET  lease -> admitted at         the requests log
    tok     ZSET  lease -> logged at           the tokens log: when,
    tokn    HASH  lease -> tokens                how many,
    toksum  STRING                               and their sum
    cc      ZSET  lease -> expires at          the concurrency leases
"""

_NOW = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
"""

# The logs lose what left the window; in chunks, since unpack() takes a few thousand at most.
_EXPIRE = """
local function drop(log, counts, sum, edge, keep)
  local total = 0
  while true do
    local gone = redis.call('ZRANGEBYSCORE', log, '-inf', edge, 'LIMIT', 0, 512)
    if #gone == 0 then break end
    local held = redis.call('HMGET', counts, unpack(gone))
    for i = 1, #held do total = total + (tonumber(held[i]) or 0) end
    redis.call('HDEL', counts, unpack(gone))
    redis.call('ZREM', log, unpack(gone))
  end
  if total > 0 then
    redis.call('DECRBY', sum, total)
  end
  -- the log, its counts and their sum live and expire together: a sum outliving its log would
  -- keep tokens that are no longer in it
  for _, k in ipairs({log, counts, sum}) do redis.call('PEXPIRE', k, keep) end
end
"""

# KEYS: req, tok, tokn, toksum, cc, then each budget's counter for its current period
# ARGV: lease, estimate, rpm, tpm, max_concurrent (-1: no such limit), window, lease ttl (us),
#       keep log, keep leases (ms), then per budget: cap, 1 if charged the estimate, expire at (s)
# Returns {0, requests left, requests reset, tokens left, tokens reset} or a refusal:
#   {1} concurrency, {2, budget index (1-based)}, {3, retry after}, {4, retry after}
ADMIT = _NOW + _EXPIRE + """
local req, tok, tokn, toksum, cc = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local lease, estimate = ARGV[1], tonumber(ARGV[2])
local rpm, tpm, most = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local window, ttl = tonumber(ARGV[6]), tonumber(ARGV[7])
local keep, keep_cc = tonumber(ARGV[8]), tonumber(ARGV[9])
-- a log is only read under its limit, so one without its limit need not expire now
local edge = now - window
if rpm >= 0 then redis.call('ZREMRANGEBYSCORE', req, '-inf', edge) end
if tpm >= 0 then drop(tok, tokn, toksum, edge, keep) end
if most >= 0 then redis.call('ZREMRANGEBYSCORE', cc, '-inf', now) end

if most >= 0 and redis.call('ZCARD', cc) >= most then return {1} end
for i = 6, #KEYS do
  local at = 10 + (i - 6) * 3
  if tonumber(redis.call('GET', KEYS[i]) or '0') >= tonumber(ARGV[at]) then return {2, i - 5} end
end
local n = 0
if rpm >= 0 then
  n = redis.call('ZCARD', req)
  if n >= rpm then
    local must_leave = redis.call('ZRANGE', req, n - rpm, n - rpm, 'WITHSCORES')
    return {3, tonumber(must_leave[2]) + window - now}
  end
end
local taken, sum = estimate, 0
if tpm >= 0 then
  if taken > tpm then taken = tpm end
  sum = tonumber(redis.call('GET', toksum) or '0')
  if sum + taken > tpm then
    -- when the entry leaves whose leaving leaves room for this one
    local room, held, from = tpm - taken, sum, 0
    while true do
      local entries = redis.call('ZRANGE', tok, from, from + 255, 'WITHSCORES')
      if #entries == 0 then return {4, window} end
      local leases = {}
      for i = 1, #entries, 2 do leases[#leases + 1] = entries[i] end
      local counts = redis.call('HMGET', tokn, unpack(leases))
      for i = 1, #counts do
        held = held - (tonumber(counts[i]) or 0)
        if held <= room then return {4, tonumber(entries[2 * i]) + window - now} end
      end
      from = from + 256
    end
  end
end

local out = {0, 0, 0, 0, 0}
if most >= 0 then
  redis.call('ZADD', cc, now + ttl, lease)
  redis.call('PEXPIRE', cc, keep_cc)
end
if rpm >= 0 then
  redis.call('ZADD', req, now, lease)
  redis.call('PEXPIRE', req, keep)
  out[2] = rpm - n - 1
  out[3] = tonumber(redis.call('ZRANGE', req, 0, 0, 'WITHSCORES')[2]) + window - now
end
if tpm >= 0 then
  redis.call('ZADD', tok, now, lease)
  redis.call('HSET', tokn, lease, taken)
  sum = redis.call('INCRBY', toksum, taken)
  for _, k in ipairs({tok, tokn, toksum}) do redis.call('PEXPIRE', k, keep) end
  out[4] = math.max(tpm - sum, 0)
  out[5] = tonumber(redis.call('ZRANGE', tok, 0, 0, 'WITHSCORES')[2]) + window - now
end
for i = 6, #KEYS do
  local at = 10 + (i - 6) * 3
  if ARGV[at + 1] == '1' then
    redis.call('INCRBYFLOAT', KEYS[i], estimate)
    redis.call('EXPIREAT', KEYS[i], ARGV[at + 2])
  end
end
return out
"""

# KEYS: tok, tokn, toksum, cc, then the budget counters to charge
# ARGV: lease, tokens to log (0: none), keep log (ms), then per counter: amount, expire at (s)
SETTLE = _NOW + """
local tok, tokn, toksum, lease = KEYS[1], KEYS[2], KEYS[3], ARGV[1]
local tokens, keep = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREM', KEYS[4], lease)
local logged = redis.call('HGET', tokn, lease)
if logged then
  redis.call('HDEL', tokn, lease)
  redis.call('ZREM', tok, lease)
  redis.call('DECRBY', toksum, logged)
end
if tokens > 0 then
  redis.call('ZADD', tok, now, lease)  -- the newest entry: logged when the answer ended
  redis.call('HSET', tokn, lease, tokens)
  redis.call('INCRBY', toksum, tokens)
end
if logged or tokens > 0 then
  for _, k in ipairs({tok, tokn, toksum}) do redis.call('PEXPIRE', k, keep) end
end
for i = 5, #KEYS do
  local at = 4 + (i - 5) * 2
  redis.call('INCRBYFLOAT', KEYS[i], ARGV[at])
  redis.call('EXPIREAT', KEYS[i], ARGV[at + 1])
end
return 0
"""

# KEYS: cc; ARGV: lease ttl (us), keep leases (ms), then the leases still running
REFRESH = _NOW + """
local until_ = now + tonumber(ARGV[1])
for i = 3, #ARGV do redis.call('ZADD', KEYS[1], 'XX', until_, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 0
"""

# KEYS: the ejections HASH (provider -> ejected until, us); ARGV: provider, for how long (us)
EJECT = _NOW + """
local keep = math.floor(tonumber(ARGV[2]) / 1000) + 1000
redis.call('HSET', KEYS[1], ARGV[1], now + tonumber(ARGV[2]))
if redis.call('PTTL', KEYS[1]) < keep then redis.call('PEXPIRE', KEYS[1], keep) end
return 0
"""

# KEYS: the ejections HASH. Returns {provider, microseconds left, ...}, the past ones dropped.
EJECTIONS = _NOW + """
local all, out = redis.call('HGETALL', KEYS[1]), {}
for i = 1, #all, 2 do
  local left = tonumber(all[i + 1]) - now
  if left > 0 then
    out[#out + 1] = all[i]
    out[#out + 1] = left
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return out
"""

# KEYS: the response's HASH; ARGV: owner, response, conversation, ttl (ms)
PUT_RESPONSE = """
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'response', ARGV[2], 'conversation', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 0
"""

# KEYS: the response's HASH; ARGV: owner. Returns 1 if it was there and the owner's.
DELETE_RESPONSE = """
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
