-- Argo CD health of a hetplace.io/v1alpha1 InferenceWorkload, from the status the operator writes
-- (phase; conditions Valid, Placed, SLOMet, TelemetryFresh, Ready; summary).
-- Argo runs this in gopher-lua (Lua 5.1) with only the base, table and os libraries open unless
-- the customization sets useOpenLibs, so nothing here uses string.* or math.*.
-- tests/test_argocd_health.py runs it under Lua 5.1 on statuses the operator's own code builds.
--
--   Progressing  no status yet; status of an older generation; a move under way (Migrating);
--                groups not yet available or their model not yet ready
--   Degraded     invalid spec (Valid=False); no placement meets the spec (Infeasible: what ran
--                before keeps serving); the API refused hetplace's objects (Ready=False
--                ApplyRefused); the SLO is missed (SLOMet=False)
--   Suspended    dry-run: the operator decided and creates nothing (HETPLACE_DRY_RUN=true)
--   Healthy      Placed=True and Ready=True
-- Missing is Argo's own verdict for an object absent from the cluster; this script never sees one.

local function health(verdict, message)
  return { status = verdict, message = message }
end

local function condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function said(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

local status = obj.status
if status == nil or status.phase == nil then
  return health("Progressing", "Waiting for the operator to decide a placement")
end

local generation = obj.metadata and obj.metadata.generation
local valid = condition(status, "Valid")
local placed = condition(status, "Placed")
local ready = condition(status, "Ready")
local slo = condition(status, "SLOMet")

-- A refusal is written as the Ready condition alone (status.observedGeneration stays behind it),
-- so it is read before the generation check.
if ready ~= nil and ready.status == "False" and ready.reason == "ApplyRefused"
    and (generation == nil or ready.observedGeneration == generation) then
  return health("Degraded", "The API server refused hetplace's objects: " .. said(ready, "no message"))
end

if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  return health("Progressing", "Waiting for the operator to observe generation " .. tostring(generation))
end

if status.phase == "Invalid" or (valid ~= nil and valid.status == "False") then
  return health("Degraded", "Invalid spec: " .. said(valid, "see status"))
end

if status.phase == "Infeasible" then
  return health("Degraded", "Infeasible: " .. said(placed, "no placement meets the spec"))
end

if status.phase == "Degraded" then
  return health("Degraded", said(ready, said(placed, "Degraded")))
end

if status.phase == "Migrating" then
  return health("Progressing", "Migrating: " .. said(placed, "a move is under way"))
end

if ready ~= nil and ready.reason == "DryRun" then
  return health("Suspended", "Dry run: decided " .. (status.summary or "") .. ", nothing created")
end

if status.phase == "Placed" and placed ~= nil and placed.status == "True" then
  if slo ~= nil and slo.status == "False" then
    return health("Degraded", "SLO missed: " .. said(slo, "see status"))
  end
  if ready ~= nil and ready.status == "True" then
    return health("Healthy", status.summary or "placed")
  end
end

return health("Progressing", said(ready, "Waiting for " .. tostring(status.phase)))
