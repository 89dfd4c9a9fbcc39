-- Sluice health check for serving.kserve.io/InferenceService (an argocd-cm resource customization).
-- ArgoCD runs it (Lua 5.1) with the live object as the global `obj` and reads the returned
-- {status, message}. Stricter than ArgoCD's bundled check, on purpose:
--   Degraded    a revision failed (RevisionFailed & co., or the model failed to load)
--   Progressing a canary still holds partial traffic, a new revision is not ready yet, or the
--               controller has not caught up with the spec
--   Suspended   the service is stopped (serving.kserve.io/stop: "true", in any case, as KServe
--               reads it: strings.EqualFold in pkg/utils GetForceStopRuntime)
--   Healthy     Ready, and the newest revision has all the traffic
-- argocd/argocd-cm-patch.yaml embeds this file: regenerate it with `python argocd/cm_patch.py`
-- (a test fails while it is stale).

local FAILURE_REASONS = {
  RevisionFailed = true,
  RevisionMissing = true,
  ContainerMissing = true,
  ProgressDeadlineExceeded = true,
}
-- modelStatus.transitionStatus values after which the model will not load without a spec change.
local FAILED_TRANSITIONS = { BlockedByFailedLoad = true, InvalidSpec = true }

local function result(status, message)
  return { status = status, message = message }
end

local function describe(c)
  local text = tostring(c.type) .. " is " .. tostring(c.status)
  if c.reason ~= nil and c.reason ~= "" then
    text = text .. " (" .. c.reason .. ")"
  end
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

-- KServe stops a service whose stop annotation equals "true" ignoring case ("True", "TRUE").
local function stopped(meta)
  local value = meta.annotations ~= nil and meta.annotations["serving.kserve.io/stop"] or nil
  return type(value) == "string" and string.lower(value) == "true"
end

local function health(o)
  local meta = o.metadata or {}
  if meta.deletionTimestamp ~= nil then
    return result("Progressing", "InferenceService is being deleted")
  end
  if stopped(meta) then
    return result("Suspended", "InferenceService is stopped (serving.kserve.io/stop)")
  end
  local status = o.status
  if status == nil or status.conditions == nil then
    return result("Progressing", "Waiting for the KServe controller to report status")
  end
  if status.observedGeneration ~= nil and meta.generation ~= nil
      and status.observedGeneration < meta.generation then
    return result("Progressing", "Waiting for the KServe controller to observe generation "
      .. tostring(meta.generation))
  end

  local by_type = {}
  local failed = {}
  local pending = {}
  for _, c in ipairs(status.conditions) do
    -- A condition without a type (a broken controller, a hand-edited status) is still reported,
    -- but cannot be looked up by type: indexing a Lua table with nil raises.
    if c.type ~= nil then
      by_type[c.type] = c
    end
    if c.status == "False" and c.reason ~= nil and FAILURE_REASONS[c.reason] then
      table.insert(failed, describe(c))
    elseif c.status ~= "True" then
      table.insert(pending, describe(c))
    end
  end

  local predictor = nil
  if status.components ~= nil then
    predictor = status.components.predictor
  end
  local created, ready_rev = nil, nil
  if predictor ~= nil then
    created, ready_rev = predictor.latestCreatedRevision, predictor.latestReadyRevision
  end
  -- Knative keeps latestReadyRevision on the old revision when the newest one cannot start.
  if #failed == 0 and created ~= nil and ready_rev ~= nil and created ~= ready_rev then
    local cfg = by_type["PredictorConfigurationReady"]
    if cfg ~= nil and cfg.status == "False" then
      table.insert(failed, "Revision " .. created .. " failed: " .. describe(cfg))
    end
  end
  local ms = status.modelStatus
  if ms ~= nil and ms.transitionStatus ~= nil and FAILED_TRANSITIONS[ms.transitionStatus] then
    local text = "Model " .. ms.transitionStatus
    if ms.lastFailureInfo ~= nil and ms.lastFailureInfo.message ~= nil then
      text = text .. ": " .. ms.lastFailureInfo.message
    end
    table.insert(failed, text)
  end
  if #failed > 0 then
    return result("Degraded", table.concat(failed, "; "))
  end

  -- Canary: the newest revision holds less than 100% while an older one still serves the rest.
  if predictor ~= nil and predictor.traffic ~= nil then
    local latest_pct, latest_name, other_pct = nil, "?", 0
    for _, t in ipairs(predictor.traffic) do
      local pct = t.percent or 0
      if t.latestRevision == true then
        latest_pct = (latest_pct or 0) + pct
        latest_name = t.revisionName or latest_name
      else
        other_pct = other_pct + pct
      end
    end
    if latest_pct ~= nil and latest_pct < 100 and other_pct > 0 then
      return result("Progressing", "Canary: revision " .. latest_name .. " receives "
        .. tostring(latest_pct) .. "% of traffic, previous revision " .. tostring(other_pct) .. "%")
    end
  end
  -- Traffic not reported yet, but the spec asks for a canary that has not been rolled out.
  local spec_predictor = (o.spec or {}).predictor or {}
  local canary = spec_predictor.canaryTrafficPercent
  if canary ~= nil and canary < 100 and predictor ~= nil and predictor.latestRolledoutRevision ~= nil
      and ready_rev ~= nil and predictor.latestRolledoutRevision ~= ready_rev then
    return result("Progressing", "Canary at " .. tostring(canary) .. "%: revision " .. ready_rev
      .. " is not rolled out (rolled out: " .. predictor.latestRolledoutRevision .. ")")
  end
  if created ~= nil and ready_rev ~= nil and created ~= ready_rev then
    return result("Progressing", "Waiting for revision " .. created .. " to become ready")
  end

  local ready = by_type["Ready"]
  if ready == nil or ready.status ~= "True" then
    if #pending == 0 then
      return result("Progressing", "Waiting for the Ready condition")
    end
    return result("Progressing", table.concat(pending, "; "))
  end
  local rev = ready_rev or created
  if rev ~= nil then
    return result("Healthy", "Ready; revision " .. rev .. " serves all traffic")
  end
  return result("Healthy", "Ready")
end

return health(obj)
