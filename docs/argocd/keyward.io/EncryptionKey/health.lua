-- Argo CD health of a keyward.io/EncryptionKey, from what keyward reports in status.
-- It reads what kstatus reads (Flux, kpt): Degraded while Stalled (keyward will not go
-- on until a person acts), Progressing while Reconciling (a rotation requested or
-- running, the key reaching the pods, a Secret that may still come) or while keyward
-- has not yet seen the current generation, Healthy once Ready.
-- A status written before keyward reported Stalled and Reconciling is read as before:
-- by its Ready reason and the Rotating condition.

-- Ready=False reasons that resolve without a person.
local waits = {
  Distributing = true,                  -- pods of the targets are taking the keyring
  TargetNotFound = true,                -- a workload in spec.targets does not exist yet
  SourceSecretMissing = true,           -- spec.source's Secret does not exist yet
  KeyEncryptionKeySecretMissing = true, -- spec.keyEncryptionKeyRef's Secret does not exist yet
  CiphertextRemains = true,             -- new ciphertext under an old version: keyward re-encrypts it
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
local rotating = conditions.Rotating
if ready == nil or ready.status == "Unknown"
    or (ready.observedGeneration ~= nil and ready.observedGeneration ~= generation) then
  hs.status = "Progressing"
  hs.message = "waiting for keyward to report Ready for generation " .. tostring(generation)
  return hs
end

local message = ready.message or ""
if ready.status == "False" and not waits[ready.reason] then
  hs.status = "Degraded"
  hs.message = said(ready)
elseif holds(rotating) then
  hs.status = "Progressing"
  hs.message = "rotation " .. said(rotating)
elseif ready.status == "True" then
  hs.status = "Healthy"
  hs.message = message
else
  hs.status = "Progressing"
  hs.message = said(ready)
end
return hs
