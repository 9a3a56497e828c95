// Headless Node-RED for the comparison benchmark: no editor, no admin API, nothing listening.
module.exports = {
    flowFile: process.env.NR_FLOWS,
    credentialSecret: false,
    uiHost: "127.0.0.1",
    uiPort: 0,
    httpAdminRoot: false,
    httpNodeRoot: false,
    disableEditor: true,
    externalModules: { autoInstall: false, palette: { allowInstall: false }, modules: { allowInstall: false } },
    diagnostics: { enabled: false, ui: false },
    runtimeState: { enabled: false, ui: false },
    telemetry: { enabled: false },
    functionExternalModules: false,
    logging: { console: { level: "info", metrics: false, audit: false } },
};
