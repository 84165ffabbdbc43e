from twisted.application.service import ServiceMaker

enrp = ServiceMaker("RSerPool registrar", "rserpool.tap", "An RSerPool registrar (ENRP server) serving ASAP over TCP.", "enrp")
