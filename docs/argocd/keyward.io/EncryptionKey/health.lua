-- Argo CD health of a keyward.io/EncryptionKey, from what keyward reports in status.
-- Healthy: Ready=True for the current generation and no rotation running.
-- Progressing: keyward has not yet seen the current generation, the key is still
-- reaching the pods, a rotation runs, or keyward waits for something that arrives by
-- itself. Degraded: keyward will not go on until a person resolves the Ready reason.

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

local ready = nil
local rotating = nil
if status.conditions ~= nil then
  for _, condition in ipairs(status.conditions) do
    if condition.type == "Ready" then
      ready = condition
    elseif condition.type == "Rotating" then
      rotating = condition
    end
  end
end
if ready == nil or ready.status == "Unknown"
    or (ready.observedGeneration ~= nil and ready.observedGeneration ~= generation) then
  hs.status = "Progressing"
  hs.message = "waiting for keyward to report Ready for generation " .. tostring(generation)
  return hs
end

local message = ready.message or ""
if ready.status == "False" and not waits[ready.reason] then
  hs.status = "Degraded"
  hs.message = tostring(ready.reason) .. ": " .. message
elseif rotating ~= nil and rotating.status == "True" then
  hs.status = "Progressing"
  hs.message = "rotation " .. tostring(rotating.reason) .. ": " .. (rotating.message or "")
elseif ready.status == "True" then
  hs.status = "Healthy"
  hs.message = message
else
  hs.status = "Progressing"
  hs.message = tostring(ready.reason) .. ": " .. message
end
return hs
