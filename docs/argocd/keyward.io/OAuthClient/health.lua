-- Argo CD health of a keyward.io/OAuthClient, from what keyward reports in status.
-- It reads what kstatus reads (Flux, kpt): Degraded while Stalled (keyward refuses to
-- act until a person changes something), Progressing while Reconciling (a secret being
-- issued, a key or a Secret that may still come) or while keyward has not yet seen the
-- current generation, Healthy once Ready.
-- A status written before keyward reported Stalled and Reconciling is read as before:
-- by its Ready reason.

-- Ready=False reasons that resolve without a person.
local waits = {
  EncryptionKeyNotReady = true, -- spec.encryptionKeyRef's key has no usable keyring yet
  KeyNotDistributed = true,     -- the key version is not yet on every pod of the key's targets
  ImportSourceMissing = true,   -- spec.importFrom's Secret does not exist yet
}

local hs = {}
local generation = obj.metadata.generation
local status = obj.status
if status == nil or status.observedGeneration == nil or status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "waiting for keyward to observe generation " .. tostring(generation)
  return hs
end

local conditions = {}
if status.conditions ~= nil then
  for _, condition in ipairs(status.conditions) do
    conditions[condition.type] = condition
  end
end
local function holds(condition)
  return condition ~= nil and condition.status == "True"
end
local function said(condition)
  return tostring(condition.reason) .. ": " .. (condition.message or "")
end

if holds(conditions.Stalled) then
  hs.status = "Degraded"
  hs.message = said(conditions.Stalled)
  return hs
end
if holds(conditions.Reconciling) then
  hs.status = "Progressing"
  hs.message = said(conditions.Reconciling)
  return hs
end

local ready = conditions.Ready
if ready == nil or ready.status == "Unknown"
    or (ready.observedGeneration ~= nil and ready.observedGeneration ~= generation) then
  hs.status = "Progressing"
  hs.message = "waiting for keyward to report Ready for generation " .. tostring(generation)
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or ""
elseif waits[ready.reason] then
  hs.status = "Progressing"
  hs.message = said(ready)
else
  hs.status = "Degraded"
  hs.message = said(ready)
end
return hs
