-- Settles a finished request, on Redis's clock: what it spent after its admission is
-- charged and what its admission held is let go.
--
-- KEYS: one per step. ARGV[1]: the number of steps; then two per step: kind, n.
--   d  debit a per-minute token limit: n tokens (always taken; past the burst it is debt),
--      with ARGV's next value the microseconds per token
--   r  let go of a daily hold of n
--   s  spend n against a daily quota
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = tonumber(ARGV[1])
local at = 2
for i = 1, n do
  local kind = ARGV[at]
  local amount = tonumber(ARGV[at + 1])
  at = at + 2
  if kind == 'd' then
    local per = tonumber(ARGV[at])
    at = at + 1
    local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
    if tat < now then tat = now end
    local next = tat + per * amount
    local ttl = math.floor((next - now) / 1000) + 1000
    redis.call('SET', KEYS[i], string.format('%.0f', next), 'PX', string.format('%.0f', ttl))
  elseif kind == 'r' then
    if redis.call('HINCRBY', KEYS[i], 'held', string.format('%.0f', -amount)) < 0 then
      redis.call('HSET', KEYS[i], 'held', 0)
    end
  else
    redis.call('HINCRBY', KEYS[i], 'spent', string.format('%.0f', amount))
    redis.call('EXPIRE', KEYS[i], 172800)
  end
end
return 1
