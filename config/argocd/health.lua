-- Argo CD health check for waymark.dev/Release.
-- RolledBack and Degraded are Degraded, a running canary is Progressing, a canary waiting
-- for `waymark promote` (or for data, or for the error budget) is Suspended.
local hs = {}
if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Waymark controller to report a phase"
  return hs
end
if obj.metadata ~= nil and obj.metadata.generation ~= nil and obj.status.observedGeneration ~= nil
    and obj.status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the Waymark controller to observe generation " .. obj.metadata.generation
  return hs
end
local phase = obj.status.phase
if phase == "Healthy" then
  hs.status = "Healthy"
elseif phase == "Progressing" then
  hs.status = "Progressing"
elseif phase == "Paused" then
  hs.status = "Suspended"
elseif phase == "RolledBack" or phase == "Degraded" then
  hs.status = "Degraded"
else
  hs.status = "Unknown"
end
local message = obj.status.message
if message == nil or message == "" then
  message = phase
end
if obj.status.reason ~= nil and obj.status.reason ~= "" then
  message = obj.status.reason .. ": " .. message
end
hs.message = message
return hs
