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

local hs = {}

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
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to decide a placement"
  return hs
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
  hs.status = "Degraded"
  hs.message = "The API server refused hetplace's objects: " .. said(ready, "no message")
  return hs
end

if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

if status.phase == "Invalid" or (valid ~= nil and valid.status == "False") then
  hs.status = "Degraded"
  hs.message = "Invalid spec: " .. said(valid, "see status")
  return hs
end

if status.phase == "Infeasible" then
  hs.status = "Degraded"
  hs.message = "Infeasible: " .. said(placed, "no placement meets the spec")
  return hs
end

if status.phase == "Degraded" then
  hs.status = "Degraded"
  hs.message = said(ready, said(placed, "Degraded"))
  return hs
end

if status.phase == "Migrating" then
  hs.status = "Progressing"
  hs.message = "Migrating: " .. said(placed, "a move is under way")
  return hs
end

if ready ~= nil and ready.reason == "DryRun" then
  hs.status = "Suspended"
  hs.message = "Dry run: decided " .. (status.summary or "") .. ", nothing created"
  return hs
end

if status.phase == "Placed" and placed ~= nil and placed.status == "True" then
  if slo ~= nil and slo.status == "False" then
    hs.status = "Degraded"
    hs.message = "SLO missed: " .. said(slo, "see status")
    return hs
  end
  if ready ~= nil and ready.status == "True" then
    hs.status = "Healthy"
    hs.message = status.summary or "placed"
    return hs
  end
end

hs.status = "Progressing"
hs.message = said(ready, "Waiting for " .. tostring(status.phase))
return hs
