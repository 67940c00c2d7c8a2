-- chat-cluster's side of the broker: every step that must be atomic on Redis, in one script.
--
-- Redis runs a script alone: no other client's command runs between two of its calls. That is
-- what makes a claim a claim (nobody can set the key between our GET and our SET) and a presence
-- record agree with the message that announces it (nobody can read the one without the other).
--
-- Called as EVALSHA <sha> 0 <operation> <arguments...>; the keys are computed here, all under
-- the prefix `chat:` (the channels' prefix too, in chat_core::cluster::Channel::name):
--
--   chat:nick:<lowercased nick>  the node (16 hex digits) that holds the nick
--   chat:lease:<node>            exists while that node is alive (PX = LEASE, refreshed every
--                                HEARTBEAT by the node)
--   chat:presence                hash: lowercased nick -> "node<TAB>nick<TAB>room"
--   chat:guests:free             sorted set: guest numbers given back, lowest first
--   chat:guests:next             the next guest number never handed out yet
--
-- (Keys computed inside a script are fine on one Redis; a Redis Cluster would want them in
-- KEYS and in one hash slot.)

local P = 'chat:'
local op = ARGV[1]

-- The node that holds `key`, or false.
local function owner(key)
  return redis.call('GET', P .. 'nick:' .. key)
end

-- True when nobody holds `key`, or only a node whose lease is gone (it died holding it).
local function free(key)
  local node = owner(key)
  return (not node) or redis.call('EXISTS', P .. 'lease:' .. node) == 0
end

-- Deletes the presence record `key` if it still names `node` (a late delete must not remove
-- the record of somebody who took the nick since).
local function forget(key, node)
  local record = redis.call('HGET', P .. 'presence', key)
  if record and string.sub(record, 1, #node + 1) == node .. '\t' then
    redis.call('HDEL', P .. 'presence', key)
  end
end

-- Writes (`set`) or deletes (`del`) one presence record.
local function record(kind, key, value)
  if kind == 'set' then
    redis.call('HSET', P .. 'presence', key, value)
  elseif kind == 'del' then
    forget(key, value)
  end
end

-- The marker: a message on the node's own channel that says "everything published before this
-- answer is in front of me on your pub/sub connection". The node hands the answer to the core
-- only when the marker arrives, after every message published before it.
local function mark(channel)
  redis.call('PUBLISH', channel, 'mark')
end

if op == 'publish' then
  -- ARGV: op, channel, message, record kind ('set' | 'del'), key, value (set) or node (del).
  -- The message and its presence record, together: a node that loads the records sees exactly
  -- the members whose arrival was published.
  record(ARGV[4], ARGV[5], ARGV[6])
  return redis.call('PUBLISH', ARGV[2], ARGV[3])

elseif op == 'record' then
  -- ARGV: op, kind, key, value or node. A record without a message (a rename moves its key).
  record(ARGV[2], ARGV[3], ARGV[4])
  return 1

-- ANCHOR: claims
elseif op == 'claim' then
  -- ARGV: op, lowercased nick, node, the node's marker channel. 1 if the nick is the node's now.
  -- A nick the node holds already is its own to give (the node itself keeps its members' nicks
  -- apart).
  local key, node = ARGV[2], ARGV[3]
  local granted = 0
  if free(key) or owner(key) == node then
    redis.call('SET', P .. 'nick:' .. key, node)
    granted = 1
  end
  mark(ARGV[4])
  return granted

elseif op == 'guest' then
  -- ARGV: op, node, marker channel. The lowest guestN (N >= 1) nobody holds, now the node's.
  -- The lowest given back first, else the next never used; a number whose nick somebody took by
  -- hand (`/nick guest5`) is skipped, and comes back when that holder lets it go.
  local node = ARGV[2]
  while true do
    local n
    local back = redis.call('ZPOPMIN', P .. 'guests:free')
    if #back > 0 then
      n = back[1]
    else
      n = tostring(redis.call('INCR', P .. 'guests:next'))
    end
    local key = 'guest' .. n
    if free(key) then
      redis.call('SET', P .. 'nick:' .. key, node)
      mark(ARGV[3])
      return key
    end
  end

-- ANCHOR_END: claims
elseif op == 'release' then
  -- ARGV: op, lowercased nick, node. Frees the nick if `node` still holds it (compare and
  -- delete: a late release must not free somebody else's new claim); a guest number goes back to
  -- the free ones; the presence record goes too if it still names `node`.
  local key, node = ARGV[2], ARGV[3]
  if owner(key) == node then
    redis.call('DEL', P .. 'nick:' .. key)
    local n = string.match(key, '^guest([1-9]%d*)$')
    if n then
      redis.call('ZADD', P .. 'guests:free', tonumber(n), n)
    end
  end
  forget(key, node)
  return 1

elseif op == 'reclaim' then
  -- ARGV: op, lowercased nick, node. After an outage: the nick of a member of `node` is its
  -- again, unless somebody else took it meanwhile (0: the node logs the conflict).
  local key, node = ARGV[2], ARGV[3]
  if free(key) or owner(key) == node then
    redis.call('SET', P .. 'nick:' .. key, node)
    return 1
  end
  return 0

elseif op == 'load' then
  -- ARGV: op, marker channel. Every presence record, and the marker at the same instant: the
  -- node applies the records after what was published before them, and before what came after.
  local all = redis.call('HGETALL', P .. 'presence')
  mark(ARGV[2])
  return all
end

return redis.error_reply('unknown operation ' .. tostring(op))
