-- Argo CD health of a keyward.io/OAuthClient, from what keyward reports in status.
-- Healthy: Ready=True for the current generation. Progressing: keyward has not yet
-- seen the current generation, or waits for something that arrives by itself.
-- Degraded: keyward refuses to act until a person resolves the Ready reason.

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

local ready = nil
if status.conditions ~= nil then
  for _, condition in ipairs(status.conditions) do
    if condition.type == "Ready" then
      ready = condition
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
if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = message
elseif waits[ready.reason] then
  hs.status = "Progressing"
  hs.message = tostring(ready.reason) .. ": " .. message
else
  hs.status = "Degraded"
  hs.message = tostring(ready.reason) .. ": " .. message
end
return hs
