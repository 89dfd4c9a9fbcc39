-- Health of argoproj.io/Application, so the root app-of-apps waits for each child Application
-- (platform at wave 0) to be Healthy before syncing the next wave (models at wave 1). ArgoCD
-- removed this built-in check in v1.8; this is the documented replacement.
local hs = { status = "Progressing", message = "" }
if obj.status ~= nil and obj.status.health ~= nil and obj.status.health.status ~= nil then
  hs.status = obj.status.health.status
  if obj.status.health.message ~= nil then
    hs.message = obj.status.health.message
  end
end
return hs
